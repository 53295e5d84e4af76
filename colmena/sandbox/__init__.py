"""Labelled provider sandboxes that `colmena dev` serves itself, so every story runs offline.

Each sandbox is an aiohttp sub-app mounted under `/sandbox/<provider>` that speaks the
provider's real wire format: colmena's own gateways talk to it unchanged. Only `colmena.dev`
imports this package (the import contracts in pyproject.toml say so), so the ingress that
`colmena ingress` builds never has a `/sandbox` route.
"""
