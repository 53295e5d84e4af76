"""The emails of self-service accounts, in the reader's language: verify the address, someone
signed up with an address that already has an account, reset the password.

Templates next to the license and invoice ones: they know each email's shape, not why it is
sent. A link is the only value placed in them, escaped in the HTML.
"""

from __future__ import annotations

import html
from typing import Literal

from colmena.gateways.mail import RenderedEmail, language_for

AccountEmailKind = Literal["verify", "already_registered", "reset"]

_STRINGS: dict[str, dict[AccountEmailKind, tuple[str, list[str]]]] = {
    "es": {
        "verify": (
            "Confirma tu correo",
            [
                "Hola:",
                "Para activar tu cuenta abre este enlace (vence en {ttl}):",
                "{link}",
                "Si no creaste una cuenta, ignora este correo.",
            ],
        ),
        "already_registered": (
            "Intento de registro con tu correo",
            [
                "Hola:",
                "Alguien intentó crear una cuenta con este correo, que ya tiene una.",
                "Si fuiste tú, inicia sesión; si olvidaste la contraseña, pide un enlace para "
                "restablecerla. Si no fuiste tú, no hace falta hacer nada.",
            ],
        ),
        "reset": (
            "Restablece tu contraseña",
            [
                "Hola:",
                "Para elegir una contraseña nueva abre este enlace (vence en {ttl}, sirve una "
                "sola vez y cierra las sesiones abiertas):",
                "{link}",
                "Si no lo pediste, ignora este correo: tu contraseña no cambia.",
            ],
        ),
    },
    "en": {
        "verify": (
            "Confirm your email",
            [
                "Hello,",
                "To activate your account open this link (it expires in {ttl}):",
                "{link}",
                "If you did not create an account, ignore this email.",
            ],
        ),
        "already_registered": (
            "Sign-up attempt with your email",
            [
                "Hello,",
                "Someone tried to create an account with this email, which already has one.",
                "If it was you, log in; if you forgot the password, ask for a reset link. If it "
                "was not you, there is nothing to do.",
            ],
        ),
        "reset": (
            "Reset your password",
            [
                "Hello,",
                "To choose a new password open this link (it expires in {ttl}, works once and "
                "ends every open session):",
                "{link}",
                "If you did not ask for it, ignore this email: your password stays as it is.",
            ],
        ),
    },
}


def _ttl_text(minutes: float, lang: str) -> str:
    if minutes >= 120:
        hours = round(minutes / 60)
        return f"{hours} horas" if lang == "es" else f"{hours} hours"
    whole = round(minutes)
    return f"{whole} minutos" if lang == "es" else f"{whole} minutes"


def account_email(
    kind: AccountEmailKind, *, locale: str | None, link: str = "", ttl_minutes: float = 0
) -> RenderedEmail:
    """Subject, text and HTML of one account email; `link` and `ttl_minutes` for the kinds
    that carry a link."""
    lang = language_for(locale)
    subject, lines = _STRINGS[lang][kind]
    ttl = _ttl_text(ttl_minutes, lang)
    paragraphs = [line.format(link=link, ttl=ttl) for line in lines]
    body = "".join(
        f'<p><a href="{html.escape(p)}">{html.escape(p)}</a></p>\n'
        if p == link and link
        else f"<p>{html.escape(p)}</p>\n"
        for p in paragraphs
    )
    return RenderedEmail(
        subject=subject,
        text="\n\n".join(paragraphs) + "\n",
        html='<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(subject)}</title></head>\n"
        f'<body style="font-family: sans-serif; line-height: 1.5;">\n{body}</body></html>\n',
    )
