"""The aiohttp ingress: verify, persist, answer; routes per audience, middlewares per concern."""
