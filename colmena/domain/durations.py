"""How colmena writes an age for a person to read at a glance: `colmena status`, the console's
pages and the daily health report say "15 min" or "2.0 days" alike."""

from __future__ import annotations


def age_text(seconds: float) -> str:
    """Seconds under two minutes, minutes under two hours, hours under two days, then days."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
