"""Keep credentials out of logs, records and artifacts."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)[^/@\s]+@")
_TOKEN_PARAM = re.compile(r"(?i)([?&](?:token|key|secret|password|sig|signature|access_token)=)[^&\s]+")
_HF_TOKEN = re.compile(r"hf_[A-Za-z0-9]{20,}")


def redact(text: str) -> str:
    """Mask user:password@ in URLs, token-like query parameters and Hugging Face tokens."""
    text = _USERINFO.sub(r"\g<scheme>***@", text)
    text = _TOKEN_PARAM.sub(r"\1***", text)
    return _HF_TOKEN.sub("hf_***", text)


def has_credentials(url: str) -> bool:
    return redact(url) != url
