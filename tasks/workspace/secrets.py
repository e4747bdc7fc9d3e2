"""Keep credentials out of logs, records and artifacts.

Every function here runs in time linear in the length of its input: no pattern may backtrack over
user text (a 50 MB recipe value reaches `redact` through the error messages). URLs are split with
`urllib.parse` and the userinfo is cut at the *last* `@` of the URL, so a password holding a raw
`@`, `/`, `?`, `#` or `:` (or their percent-encoded forms) is masked whole, user name included.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

MASK = "***"

# Token-like query parameters and Hugging Face tokens. Both patterns are anchored on a fixed prefix
# and end in one greedy class with nothing after it, so they never backtrack.
_TOKEN_PARAM = re.compile(r"(?i)([?&](?:token|key|secret|password|sig|signature|access_token)=)[^&\s]+")
_HF_TOKEN = re.compile(r"hf_[A-Za-z0-9]{20,}")
_SPACE = re.compile(r"\s")
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_MAX_SCHEME = 32  # no real scheme is longer; bounds the backward look at each "://"
_SPILL = 256  # how far past a space a password that holds one may reach for its "@"


def _scheme_start(text: str, sep: int) -> int | None:
    """Where the scheme ending at `sep` (the index of "://") starts, or None if there is none."""
    start = sep
    while start > 0 and sep - start < _MAX_SCHEME and text[start - 1] in _SCHEME_CHARS:
        start -= 1
    while start < sep and not ("a" <= text[start].lower() <= "z"):
        start += 1  # a scheme starts with a letter
    return start if start < sep else None


def split_userinfo(url: str) -> tuple[str, str, str]:
    """(scheme://, userinfo, rest) of one URL: the userinfo is everything between "://" and the last
    "@" (empty when there is none), so raw special characters in a password cannot hide its end."""
    sep = url.find("://")
    if sep < 0:
        return "", "", url
    head, tail = url[: sep + 3], url[sep + 3:]
    # urlsplit ends the netloc at the first raw "/", "?" or "#", so "user:pa/ss@host" would read as
    # host "user:pa" with the password left in the path: the last "@" is never before its netloc's.
    at = tail.rfind("@")
    return (head, tail[:at], tail[at + 1:]) if at >= 0 else (head, "", tail)


def has_credentials(url: str) -> bool:
    """True when a URL carries a user, a password or a token: any "@" after the scheme, or a
    token-like query parameter, or a Hugging Face token anywhere in it."""
    if not url:
        return False
    _, userinfo, _ = split_userinfo(url)
    return bool(userinfo) or redact(url) != url


def strip_credentials(url: str) -> tuple[str, str | None, str | None]:
    """The URL without its userinfo, and the user and password it held (percent-decoded), for
    moving them into DVC's local, git-ignored config."""
    head, userinfo, rest = split_userinfo(url)
    if not userinfo:
        return url, None, None
    user, colon, password = userinfo.partition(":")
    bare = head + rest
    urlsplit(bare)  # raises ValueError on a malformed host (an unclosed "[", a bad port)
    return bare, unquote(user) or None, unquote(password) if colon else None


def _mask_urls(text: str) -> str:
    out: list[str] = []
    pos = 0  # text[:pos] is already in `out`
    search = 0
    n = len(text)
    while True:
        sep = text.find("://", search)
        if sep < 0:
            break
        start = _scheme_start(text, sep)
        body = sep + 3
        space = _SPACE.search(text, body)
        end = space.start() if space else n
        if start is None:
            search = body
            continue
        at = text.rfind("@", body, end)
        if at < 0 and end < n:
            # a password with a space in it: "user:pa ss@host". Reach to the next "@" on the same line,
            # but only when what follows "://" looks like "user:secret" (not "host:port" or a path).
            lead = text[body:end]
            user, colon, after = lead.partition(":")
            if colon and "/" not in user and not after.split("/", 1)[0].isdigit():
                line_end = text.find("\n", end, end + _SPILL)
                limit = line_end if line_end >= 0 else min(n, end + _SPILL)
                at = text.find("@", end, limit)
                if at >= 0:
                    space = _SPACE.search(text, at)
                    end = space.start() if space else n
        if at >= 0:
            out.append(text[pos:body])
            out.append(MASK)
            pos = at  # keep the "@"
        search = max(end, body)
    out.append(text[pos:])
    return "".join(out)


def redact(text: str) -> str:
    """Mask user:password@ in URLs, token-like query parameters and Hugging Face tokens.
    Linear in len(text)."""
    if not text:
        return text
    if "://" in text:
        text = _mask_urls(text)
    if "=" in text:
        text = _TOKEN_PARAM.sub(r"\1" + MASK, text)
    if "hf_" in text:
        text = _HF_TOKEN.sub("hf_" + MASK, text)
    return text
