"""Configuration, logging and metrics: imported by every layer, importing none of them."""

from colmena.config.settings import Settings, SettingsError, load_settings

__all__ = ["Settings", "SettingsError", "load_settings"]
