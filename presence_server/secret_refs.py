"""Secrets by reference: a config value that holds a secret may name an
environment variable or a file instead of holding the secret inline.

    auth_token = { env = "ACME_AUTH_TOKEN" }
    password   = { file = "/run/secrets/operator-password" }

Operators keep secrets out of the config file this way (a Docker or
Kubernetes secret is a file; systemd's ``LoadCredential=`` too), and the
config file itself stops being a secret. References are resolved once, before
validation, so every check of the value (lengths, formats) applies to what
the reference holds. Errors name the config key and the variable or file,
never the value.

Only the keys in :data:`SECRET_KEYS` take references: a reference anywhere
else is refused with a precise error rather than silently read as a string.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

# Paths of the keys that may hold a reference; "*" is any index of a list.
SECRET_KEYS: tuple[tuple[str, ...], ...] = (
    ("server", "tls_key_password"),
    ("engine", "url"),  # a Redis URL may carry a password
    ("operator", "password"),
    ("accounts", "*", "auth_token"),
    ("accounts", "*", "api_keys", "*", "secret"),
    # Not a secret, but a multi-line PEM is easier kept in a file than in TOML.
    ("accounts", "*", "api_keys", "*", "public_key_pem"),
    ("providers", "*", "inbound_password"),
    ("providers", "*", "auth_password"),
    ("providers", "*", "auth_bearer"),
    ("providers", "*", "password"),
)

# A secret file is small; a reference to something large (or endless, such as
# /dev/zero) is a mistake, refused before it fills memory.
MAX_SECRET_FILE_BYTES = 64 * 1024

_REFERENCE_KEYS = frozenset({"env", "file"})
_SHAPE = 'a string, or a reference { env = "NAME" } or { file = "/path/to/file" }'


def key_path(path: tuple[Any, ...]) -> str:
    """``("accounts", 0, "auth_token")`` as ``accounts[0].auth_token``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def is_reference(value: Any) -> bool:
    """A table whose keys are only ``env``/``file``: no section of the config
    has a table made of those keys alone, so this reading is unambiguous."""
    return isinstance(value, dict) and bool(value) and set(value) <= _REFERENCE_KEYS


def _matches(path: tuple[Any, ...], pattern: tuple[str, ...]) -> bool:
    if len(path) != len(pattern):
        return False
    return all((p == "*" and isinstance(k, int)) or p == k for k, p in zip(path, pattern))


def is_secret_key(path: tuple[Any, ...]) -> bool:
    return any(_matches(path, pattern) for pattern in SECRET_KEYS)


def _walk(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield path, value
    if is_reference(value):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, (*path, i))


def _read_file(name: str, base_dir: Path) -> str:
    """The file's text, trailing newlines removed (``echo secret > file`` adds
    one; Kubernetes and Docker keep whatever the source had). ValueError names
    the file and what is wrong, never its content."""
    path = Path(name)
    if not path.is_absolute():
        path = base_dir / path
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SECRET_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ValueError(f"secret file {path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"secret file {path}: is a directory, not a file") from None
    except PermissionError:
        raise ValueError(f"secret file {path}: cannot read it (permission denied for this process)") from None
    except OSError as exc:
        raise ValueError(f"secret file {path}: cannot read it ({exc.strerror or exc})") from None
    if len(raw) > MAX_SECRET_FILE_BYTES:
        raise ValueError(f"secret file {path}: larger than {MAX_SECRET_FILE_BYTES} bytes; is it the right file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"secret file {path}: not UTF-8 text") from None
    text = text.rstrip("\r\n")
    if not text:
        raise ValueError(f"secret file {path}: is empty")
    return text


def resolve(reference: dict[str, Any], environ: Mapping[str, str], base_dir: Path) -> str:
    """What one reference holds; ValueError says why it holds nothing usable."""
    if len(reference) != 1:
        raise ValueError(f"a reference takes exactly one of env or file, not both; must be {_SHAPE}")
    (kind, name), = reference.items()
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} must be a non-empty string; must be {_SHAPE}")
    if kind == "env":
        if name not in environ:
            raise ValueError(f"environment variable {name} is not set")
        if not environ[name]:
            raise ValueError(f"environment variable {name} is empty")
        return environ[name]
    return _read_file(name, base_dir)


def resolve_references(data: dict[str, Any], environ: Mapping[str, str], base_dir: Path | None = None) -> list[str]:
    """Replace every reference in ``data`` (in place) by what it holds.
    Returns the problems, one line each, naming the key (``operator.password:
    environment variable OPS_PASSWORD is not set``); a key whose reference
    failed is left as it was."""
    base = base_dir if base_dir is not None else Path.cwd()
    problems = []
    for path, value in list(_walk(data)):
        if not path:
            continue
        if is_reference(value) or (isinstance(value, dict) and is_secret_key(path)):
            if not is_secret_key(path):
                problems.append(
                    f"{key_path(path)}: a reference ({{ env = ... }} or {{ file = ... }}) is accepted only for keys that "
                    "hold secrets (docs/configuration.md, 'Secrets by reference')"
                )
                continue
            if not is_reference(value):
                problems.append(f"{key_path(path)}: must be {_SHAPE}")
                continue
            try:
                resolved = resolve(value, environ, base)
            except ValueError as exc:
                problems.append(f"{key_path(path)}: {exc}")
                continue
            parent: Any = data
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]] = resolved
    return problems


def resolve_path(name: str, base_dir: Path | None) -> str:
    """A file named in the config: relative to the config file's directory
    (as secret files are), so the file and what it names move together."""
    path = Path(name)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return str(path)


