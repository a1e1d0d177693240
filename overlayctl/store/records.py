"""The store's records as frozen dataclasses, to and from JSON."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import InvalidArgument, StoreError
from .ids import chain_ids, sha256_digest

T = TypeVar("T")

_REF = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]{{1,5}})?")
_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def parse_ref(ref: str) -> str:
    """Normalise an image reference ``[host[:port]/]name[:tag]`` to ``[host[:port]/]name:tag``.

    The tag defaults to ``latest``.  A first component with a dot, a colon
    or ``localhost`` is a registry host (``127.0.0.1:5000/app:1``); Docker
    Hub's references take Docker's familiar form, so that
    ``docker.io/library/busybox`` is ``busybox:latest``.
    """
    first, slash, rest = ref.partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        return _name_tag(ref)
    if not _HOST.fullmatch(first):
        raise InvalidArgument(f"invalid registry host {first!r} in image reference {ref!r}")
    normal = _name_tag(rest)
    if first in _HUB:
        name = normal.rsplit(":", 1)[0]
        return normal[len("library/") :] if name.startswith("library/") and name.count("/") == 1 else normal
    return f"{first}/{normal}"


def _name_tag(ref: str) -> str:
    name, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
    if not _REF.fullmatch(name) or not _TAG.fullmatch(tag):
        raise InvalidArgument(
            f"invalid image reference {ref!r}",
            hint="use [HOST[:PORT]/]NAME[:TAG], lowercase name, e.g. busybox:1.35",
        )
    return f"{name}:{tag}"


def check_container_name(name: str) -> str:
    if not _NAME.fullmatch(name) or re.fullmatch(r"[0-9a-f]{64}", name):
        raise InvalidArgument(f"invalid container name {name!r}", hint="use letters, digits, '_', '.', '-'")
    return name


def load_json(path: str, kind: type = dict) -> Any:
    """A record file's JSON; StoreError when it is damaged (not JSON, or not a ``kind``).

    FileNotFoundError passes through: the caller knows what is missing.
    """
    with open(path, "rb") as f:
        raw = f.read()
    try:
        data = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for a zero-filled file
        raise damaged(path, exc) from None
    if not isinstance(data, kind):
        raise damaged(path, f"not a JSON {kind.__name__}")
    return data


def damaged(path: str, why: object) -> StoreError:
    """The error for a record that cannot be read as what it should be."""
    text = str(why).splitlines()[0] if str(why) else type(why).__name__
    return StoreError(f"damaged record {path}: {text}", hint="run 'overlayctl check'")


def load_each(ids: Iterable[str], load: Callable[[str], T]) -> list[T]:
    """``load`` of each ID, for a listing read without the lock.

    An object removed since its directory was listed is left out; a damaged
    one is skipped with a warning (``check`` names it), so one bad record
    never stops a listing of the others.
    """
    import warnings

    from ..errors import DamagedRecordWarning, NotFound

    records = []
    for object_id in ids:
        try:
            records.append(load(object_id))
        except NotFound:
            continue
        except StoreError as exc:
            warnings.warn(exc.message, DamagedRecordWarning, stacklevel=3)
    return records


def dump_json(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, compact, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class LayerRecord:
    """A read-only layer: its diff directory and where it sits in a chain."""

    id: str  # chain ID
    diff_id: str
    parent: str | None
    size: int
    created: str
    comment: str
    link: str  # short link name under <root>/l
    inodes: int = 0  # files, directories, links and devices in diff/, counted when it was made
    content_digest: str = ""  # sha256 of diff/'s canonical tar when it was made (check --verify-content)
    #: The compressed blob the layer came from (pull, image load): digest, media_type, size, and
    #: source ("host/repository" of a pull), so push can reuse or mount it instead of uploading anew.
    blob: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "diff_id": self.diff_id,
            "parent": self.parent,
            "size": self.size,
            "inodes": self.inodes,
            "content_digest": self.content_digest,
            "created": self.created,
            "comment": self.comment,
            "link": self.link,
            **({"blob": dict(self.blob)} if self.blob else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LayerRecord:
        optional = ("inodes", "content_digest", "blob")
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k not in optional}
        blob = data.get("blob") if isinstance(data.get("blob"), dict) else None
        return cls(
            **fields, inodes=int(data.get("inodes") or 0), content_digest=data.get("content_digest") or "", blob=blob
        )


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """An image: an OCI image config; its sha256 is the image ID.

    ``rootfs.diff_ids`` lists the layers bottom to top; the layer IDs are
    their chain IDs.  ``parent`` names the image a commit was made from.
    """

    config: dict[str, Any]
    id: str = ""
    raw: bytes = field(default=b"", repr=False, compare=False)

    @classmethod
    def build(
        cls,
        diff_ids: list[str],
        *,
        runtime: dict[str, Any] | None = None,
        history: list[dict[str, Any]] | None = None,
        parent: str | None = None,
        created: str | None = None,
    ) -> ImageRecord:
        config: dict[str, Any] = {
            "architecture": _architecture(),
            "os": "linux",
            "created": created or now_rfc3339(),
            "config": {k: v for k, v in (runtime or {}).items() if v not in (None, [], {}, "")},
            "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
            "history": history or [],
        }
        if parent:
            config["parent"] = parent
        return cls.from_bytes(dump_json(config))

    @classmethod
    def from_bytes(cls, raw: bytes) -> ImageRecord:
        """Raises ValueError when raw is not an image config with rootfs.diff_ids."""
        config = json.loads(raw)
        if not isinstance(config, dict) or not isinstance((config.get("rootfs") or {}).get("diff_ids"), list):
            raise ValueError("not an image config with rootfs.diff_ids")
        return cls(config=config, id=sha256_digest(raw), raw=raw)

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config["rootfs"]["diff_ids"])

    @property
    def layers(self) -> list[str]:
        """Layer (chain) IDs, bottom to top."""
        return chain_ids(self.diff_ids)

    @property
    def parent(self) -> str | None:
        return self.config.get("parent")

    @property
    def created(self) -> str:
        return self.config.get("created", "")

    @property
    def runtime(self) -> dict[str, Any]:
        return dict(self.config.get("config") or {})

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.config.get("history") or [])


def _architecture() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


@dataclass(frozen=True, slots=True)
class ContainerRecord:
    """A container: an image, its init layer and a writable upper."""

    id: str
    name: str
    image: str
    created: str
    hostname: str
    link: str  # short link name of the init layer
    layers: tuple[str, ...] = ()  # the image's layer IDs, bottom to top
    options: tuple[tuple[str, str | None], ...] = ()
    spec: dict[str, Any] = field(default_factory=dict, compare=False)  # how it runs (RunSpec)
    address: str | None = None  # its address on the bridge network

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "image": self.image,
            "created": self.created,
            "hostname": self.hostname,
            "link": self.link,
            "layers": list(self.layers),
            "options": [k if v is None else f"{k}={v}" for k, v in self.options],
            "spec": self.spec,
            "address": self.address,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContainerRecord:
        options = tuple((k, v if sep else None) for k, sep, v in (o.partition("=") for o in data.get("options", [])))
        fields = {k: data[k] for k in ("id", "name", "image", "created", "hostname", "link")}
        return cls(
            **fields,
            layers=tuple(data.get("layers", ())),
            options=options,
            spec=data.get("spec") or {},
            address=data.get("address"),
        )
