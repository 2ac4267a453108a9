"""``reneg export``: a learned negative in the layout of the host where people generate.

One canonical reneg file in, one folder out (written whole or not at all)::

    reneg export negative.safetensors --to comfyui --out exported/comfyui
    reneg export npo-delta/ --to comfyui --out exported/comfyui-npo   # an NPO adapter: comfyui or diffusers

Hosts (one module each, chosen through :data:`HOSTS`): ``comfyui`` (the Load Conditioning layout and example
workflows), ``invokeai`` (a node pack), ``a1111`` (an AUTOMATIC1111/Forge extension), ``diffusers`` (a Hub-style
folder with a model card, read back by :meth:`reneg.NegativeEmbedding.from_pretrained`). No exported file can be
taken for a textual inversion by any of those hosts (:mod:`reneg.export.layout`). An NPO adapter folder
(``reneg npo --out DIR``) goes to :mod:`reneg.export.npo` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import arg, builtin_command, require
from ..embedding import NegativeEmbedding
from . import a1111, comfyui, hub, invokeai, npo
from .layout import Source, check_family, family_of, require_family, safe_name, staged, write_manifest

#: Host name -> its module: the ``FAMILIES`` it takes and ``write(source, folder, *, results)``.
HOSTS = {"comfyui": comfyui, "invokeai": invokeai, "a1111": a1111, "diffusers": hub}


@dataclass
class ExportConfig:
    """``reneg export`` (help text once per field; the same keys in --config files)."""

    file: str | None = arg(None, "the negative embedding to export (.safetensors of `reneg train`, or a plain .pt), "
                                 "or an NPO adapter folder (`reneg npo --out DIR`; --to comfyui or diffusers)",
                           positional=True, metavar="FILE", flag="FILE")
    to: str | None = arg(None, "the host whose layout to write", choices=sorted(HOSTS))
    out: str | None = arg(None, "folder to write (created; must be new or empty, see --overwrite)", output="dir")
    name: str | None = arg(None, "base name of the exported files (default: FILE's name)")
    overwrite: bool = arg(False, "replace --out when it holds an earlier export (its reneg-export.json)")
    results: str | None = arg(None, "results.json of `reneg eval` for the model card's measured table "
                                    "(--to diffusers)", metavar="FILE")

    def __post_init__(self):
        require(bool(self.file), "give the negative embedding to export: reneg export FILE --to HOST --out DIR")
        require(bool(self.to), f"give the host: --to one of {', '.join(sorted(HOSTS))}")
        require(bool(self.out), "give the folder to write: --out DIR")
        require(self.results is None or self.to == "diffusers",
                "--results goes into the model card of --to diffusers only")


def read_source(config: ExportConfig) -> Source:
    """The embedding read and validated by reneg's own loader, with its family; ReNegError if it is unusable."""
    path = Path(config.file).expanduser()
    embedding = NegativeEmbedding.load(path)  # also a plain (L, D) tensor in .pt (the ReNeg authors' releases)
    source = Source(embedding, path, family_of(embedding), safe_name(config.name or path.stem))
    check_family(source)
    return source


def export(config: ExportConfig) -> Path:
    """Write ``config.file`` in the layout of ``config.to`` into ``config.out``; return the folder."""
    if npo.is_adapter_path(config.file):
        return npo.export(config)
    source = read_source(config)
    host = HOSTS[config.to]
    require_family(source, config.to, host.FAMILIES)
    results = hub.read_results(config.results) if config.results else None
    out = Path(config.out).expanduser()
    with staged(out, overwrite=config.overwrite) as folder:
        host.write(source, folder, results=results)
        write_manifest(folder, host=config.to, source=source.path, source_sha256=source.sha256, family=source.family)
    return out


COMMAND = builtin_command("export", ExportConfig, lambda config: print(export(config)))

