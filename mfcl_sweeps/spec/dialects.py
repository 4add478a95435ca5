"""Which dialect a sweep file is written in, and the root of each dialect's document."""
from __future__ import annotations

from typing import Any, Optional

from mfcl_sweeps.errors import SweepSpecError
from mfcl_sweeps.spec import sweepfile
from mfcl_sweeps.spec import wandb as wandb_sweep
from mfcl_sweeps.spec.fields import (
    RESOURCE_KEYS,
    Ctx,
    need_mapping,
)

# Infrastructure keys of the `{defaults, params}` dialect: kept as run metadata, never given to Hydra.
INFRA_KEYS = ("instance_type", "region", "ami", "key_name", "iam_role", "spot", "idle_timeout",
              "user_data", "security_groups", "security_group", "subnet_id", "availability_zone",
              "tags")

KNOB_KEYS = ("aliases", "exclude", "max_runs", "shuffle", "seed", "seeds", "seed_key")
NATIVE_KEYS = ("grid", "paired", "runs", "defaults", "groups", "budget", "metadata",
               *KNOB_KEYS, *RESOURCE_KEYS)
GROUP_ENTRY_KEYS = ("group", "params", "grid", "paired", "runs", "defaults", "budget", "metadata",
                    *RESOURCE_KEYS)
RUN_RESERVED_KEYS = ("name", "budget", "metadata", *RESOURCE_KEYS)
PARAM_FILE_KEYS = ("defaults", "params", "comment", "description", "date", "metadata", *KNOB_KEYS)
HSM_KEYS = ("sweep", "metadata", "defaults")

# ----------------------------------------------------------------------------- dialects


def _detect(doc: Any, file: str) -> str:
    if doc is None:
        raise SweepSpecError("the sweep file is empty: nothing to sweep", file=file, line=1)
    if not isinstance(doc, dict):
        raise SweepSpecError(f"a sweep file must be a mapping, got {type(doc).__name__}", file=file,
                             line=sweepfile.line_of(doc))
    if "method" in doc or "parameters" in doc:
        return "wandb"
    if "sweep" in doc:
        return "hsm"
    if isinstance(doc.get("params"), list):
        return "param-file"
    if isinstance(doc.get("grid"), list):
        return "entries"
    return "native"


_DIALECT_KEYS = {"native": NATIVE_KEYS, "entries": NATIVE_KEYS, "param-file": PARAM_FILE_KEYS,
                 "hsm": HSM_KEYS, "wandb": (*wandb_sweep.WANDB_KEYS, *KNOB_KEYS)}


def _file_root(doc: dict, dialect: str, ctx: Ctx, seed: Optional[int]) -> tuple[dict, dict, str]:
    """(native root mapping, spec metadata, path prefix) of a sweep file."""
    allowed = _DIALECT_KEYS[dialect]
    unknown = [k for k in doc if k not in allowed]
    if unknown:
        raise ctx.error(f"unknown top-level key for the {dialect} sweep form "
                        f"(known: {', '.join(sorted(map(str, allowed)))})", str(unknown[0]), doc, unknown[0])
    if dialect == "hsm":
        body = need_mapping(doc["sweep"], ctx, "sweep", doc, "sweep", "grid/paired")
        meta = dict(doc.get("metadata") or {})
        if "defaults" in doc:  # a Hydra defaults list for the hsm tool's own launcher choice
            meta["hydra_defaults"] = doc["defaults"]
        return body, meta, "sweep."
    if dialect == "wandb":
        def fail(message, path, container, key):
            return ctx.error(message, path, container, key)

        native = wandb_sweep.to_native(doc, seed=seed if seed is not None else doc.get("seed"), fail=fail)
        native.update({k: doc[k] for k in KNOB_KEYS if k in doc})
        return native, native.pop("metadata"), ""
    if dialect == "param-file":
        meta = {k: doc[k] for k in ("comment", "description", "date") if k in doc}
        return {k: v for k, v in doc.items() if k not in meta}, meta, ""
    return doc, {}, ""
