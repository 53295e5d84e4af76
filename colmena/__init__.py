"""colmena: verified webhooks and tenant commands in, exactly-once effects out."""

__version__ = "0.1.0"
