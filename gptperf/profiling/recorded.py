"""What a profile is: the folder `gptperf profile` replaces whole, and the record of what was
profiled (model, workload, plan, device) that its trace carries, so that a re-analysis of the
trace needs no flags and refuses flags that contradict it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gptperf.dtypes import STEP_DTYPES
from gptperf.errors import UserError
from gptperf.model.config import GPTConfig, preset
from gptperf.writable import check_replaceable_dir

SCHEMA = "gptperf.profile/1"
PROFILE_KINDS: tuple[str, ...] = ("train", "forward", "prefill", "decode")


# Keys every profile.json has had, schema or not: profile.json files written before documents
# carried a "schema" (gptperf before fa65556) are recognised by them.
_LEGACY_PROFILE_KEYS = ("workload", "coverage", "by_method_s", "attribution_method", "paths")


def is_profile_document(doc: Any) -> bool:
    """Whether `doc` (a profile.json read back) is one gptperf wrote: its "schema" is a
    gptperf.profile version (any: a newer gptperf's folder is still a profile folder), or, from
    before the schema, it has every key a profile has always had. A user's own profile.json
    (`{"my": "x"}`) is neither."""
    if not isinstance(doc, dict):
        return False
    schema = doc.get("schema")
    if schema is not None:
        return isinstance(schema, str) and schema.split("/", 1)[0] == SCHEMA.split("/", 1)[0]
    return all(k in doc for k in _LEGACY_PROFILE_KEYS) and isinstance(doc["workload"], dict)


# Every name a profile writes in its folder (`profiling.run`: the recording, then the analysis)
PROFILE_FILES = ("trace.json", "tensorboard", "ops.csv", "components.csv", "layers.csv",
                 "trace.gptperf.json", "roofline.png", "profile.json")


def check_profile_dir(out: str | Path, flag: str = "--out", *, keeps_others: bool = False) -> Path:
    """`out` as a Path when a profile may replace it whole: absent, empty, or an earlier profile
    (its profile.json) holding nothing but what a profile writes (PROFILE_FILES), unless
    `keeps_others` (a re-analysis in place keeps the folder's other files); else a one-line
    UserError naming `flag` (a user's folder is never replaced, nor written into, and a file a
    user put beside a profile is not deleted with it)."""
    return check_replaceable_dir(out, flag, what="profile", marker_file="profile.json",
                                 is_ours=is_profile_document,
                                 written=None if keeps_others else lambda doc: PROFILE_FILES)


def trace_in_folder(trace: str | Path, out: str | Path) -> bool:
    """Whether `trace` lies in the folder `out` (a re-analysis in place)."""
    try:
        out = Path(out).expanduser()
        return out.exists() and Path(trace).expanduser().resolve().is_relative_to(out.resolve())
    except OSError:
        return False


# torch.profiler writes the trace file's own path into the trace ("traceName") unescaped
TRACE_UNSAFE_CHARS = ('"', "\\")


def check_trace_folder(out: str | Path, flag: str = "--out") -> None:
    """A one-line UserError for a folder torch.profiler cannot record a trace into: one whose path
    holds a character it writes into the trace unescaped (TRACE_UNSAFE_CHARS), which would leave
    the trace invalid JSON once the steps have run."""
    path = str(Path(out).expanduser().absolute())
    bad = next((c for c in TRACE_UNSAFE_CHARS if c in path), None)
    if bad is not None:
        raise UserError(f"{flag} {str(out)!r}: its path holds {bad!r}, which torch.profiler writes "
                        "into the trace unescaped (the trace would not be valid JSON); choose a "
                        "folder whose path has no double quote or backslash")


# ----------------------------------------------------------------------------------------------
# What a trace was recorded with

# The workload dict's "source": how its values were found. Only "run" and "trace record" are a
# record of what ran; "flags" is a re-analysis that took the user's word for it.
SOURCE_RUN, SOURCE_RECORD, SOURCE_FLAGS = "run", "trace record", "flags"
RECORD_SCHEMA = "gptperf.profile.workload/1"
# What `gptperf profile` runs when a flag is left out (and a trace without a record is read as)
DEFAULT_PRESET, DEFAULT_KIND, DEFAULT_BATCH, DEFAULT_SEQ, DEFAULT_DTYPE = "tiny", "train", 8, 256, "fp32"
DTYPES: tuple[str, ...] = STEP_DTYPES


@dataclass(frozen=True)
class ProfiledWorkload:
    """What a trace was recorded with: the `workload` dict of the profile document (kind, batch,
    seq, dtype, compile, config, plan) and the device label ('cpu: AMD EPYC'); `where` says
    where it was read ('the trace' or a profile.json)."""

    workload: dict[str, Any]
    device: str
    where: str

    @property
    def config(self) -> GPTConfig:
        return GPTConfig.from_dict(self.workload["config"])

    @property
    def device_type(self) -> str:
        return self.device.split(":", 1)[0].strip()

    @property
    def device_name(self) -> str | None:
        name = self.device.split(":", 1)[1].strip() if ":" in self.device else ""
        return name or None

    def to_dict(self) -> dict[str, Any]:
        return {"schema": RECORD_SCHEMA, "workload": self.workload, "device": self.device}

    @classmethod
    def parse(cls, workload: Any, device: Any, where: str) -> ProfiledWorkload:
        """A record from its parts; a one-line UserError naming `where` when they are not one."""
        try:
            ok = (isinstance(workload, dict) and isinstance(device, str)
                  and workload["kind"] in PROFILE_KINDS and workload["dtype"] in DTYPES
                  and all(isinstance(workload[k], int) and workload[k] > 0 for k in ("batch", "seq")))
            if ok:
                GPTConfig.from_dict(workload["config"])
        except (KeyError, TypeError, ValueError, UserError):
            ok = False
        if not ok:
            raise UserError(f"{where} carries a gptperf record of the profiled workload that "
                            "cannot be read (edited, or from another gptperf?); re-record the "
                            "trace with `gptperf profile`")
        return cls(dict(workload), device, where)


def _recorded_beside(trace: Path) -> ProfiledWorkload | None:
    """The record in the profile.json of the profile folder `trace` was written into (traces of
    profiles written before traces carried their record): the folder's trace.json,
    trace.gptperf.json or tensorboard/ trace, when that profile.json names it and was itself a
    record (a re-analysis from flags is not)."""
    folder = trace.parent.parent if trace.parent.name == "tensorboard" else trace.parent
    doc_path = folder / "profile.json"
    try:
        doc = json.loads(doc_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not is_profile_document(doc) or not isinstance(doc.get("paths"), dict):
        return None
    paths = doc["paths"]
    names_ = {Path(str(paths[k])).name for k in ("trace", "augmented_trace") if k in paths}
    if trace.name not in names_ and not (trace.parent.name == "tensorboard" and "tensorboard" in paths):
        return None
    workload = doc["workload"]
    source = workload.get("source")
    # older documents have no "source": there a re-analysis wrote "compile": null, a run a bool
    if source == SOURCE_FLAGS or (source is None and workload.get("compile") is None):
        return None
    return ProfiledWorkload.parse(workload, doc.get("device"),
                                  f"the profile {str(doc_path)!r} beside the trace")


def recorded_workload(doc: Mapping[str, Any], trace: str | Path) -> ProfiledWorkload | None:
    """What the loaded trace `doc` (of file `trace`) was recorded with: its own record, else the
    profile.json beside it; None for a trace without either (a foreign torch.profiler trace)."""
    from gptperf.profiling.trace import trace_record  # deferred: keeps --help fast

    record = trace_record(doc)
    if record is not None:
        where = f"the trace {str(trace)!r}"
        if not isinstance(record, dict):
            return ProfiledWorkload.parse(None, None, where)  # raises: unreadable
        return ProfiledWorkload.parse(record.get("workload"), record.get("device"), where)
    return _recorded_beside(Path(trace))


@dataclass(frozen=True)
class TraceWorkload:
    """The workload a trace is analysed as, and how it was found (`source`: SOURCE_RECORD or
    SOURCE_FLAGS)."""

    config: GPTConfig
    kind: str
    batch: int
    seq: int
    dtype: str
    compile: bool | None
    plan: dict[str, Any] | None
    device: str  # label, e.g. 'cpu: AMD EPYC'
    device_type: str
    device_name: str | None
    source: str

    def to_dict(self) -> dict[str, Any]:
        d = workload_doc(self.config, self.kind, self.batch, self.seq, self.dtype, self.compile,
                      self.source)
        if self.plan is not None:
            d["plan"] = self.plan
        return d


def _flag(name: str) -> str:
    return "--workload" if name == "kind" else "--" + name.replace("_", "-")


def trace_workload(
    trace: str | Path, doc: Mapping[str, Any], recorded: ProfiledWorkload | None, *,
    model: Mapping[str, Any] | None = None, config: GPTConfig | None = None,
    kind: str | None = None, batch: int | None = None, seq: int | None = None,
    dtype: str | None = None, device: str | None = None, device_name: str | None = None,
) -> TraceWorkload:
    """What to analyse the trace as. The values given (None: not given) are `gptperf profile`'s
    flags: `model` the model flags ({'preset': 'gpt2', 'n_layer': 1}) or `config` a whole model.
    With a record, given values must match it (else a one-line UserError naming the flag, the
    value and the recorded one) and the rest are taken from it; without one, the given values
    and the flags' defaults are used (source "flags")."""
    model = {k: v for k, v in (model or {}).items() if v is not None}
    is_gpu = any(isinstance(e, dict) and e.get("cat") == "kernel" for e in doc["traceEvents"])
    given_type = None if device in (None, "auto") else str(device).split(":", 1)[0].strip().lower()
    if recorded is None:
        device_type = "cuda" if is_gpu else "cpu"
        if given_type is not None and given_type != device_type:
            raise UserError(f"--device {device!r} does not match the trace {str(trace)!r}: it holds "
                            f"{'GPU kernels' if is_gpu else 'no GPU kernels'} (a {device_type} "
                            "trace); leave --device out")
        props = doc.get("deviceProperties") or []
        if device_name is None and is_gpu and props and isinstance(props[0], dict):
            device_name = props[0].get("name")
        if config is None:
            config = preset(model.pop("preset", DEFAULT_PRESET), **model)
        kind = kind if kind is not None else DEFAULT_KIND
        dtype = dtype if dtype is not None else DEFAULT_DTYPE
        if kind not in PROFILE_KINDS or dtype not in DTYPES:
            raise UserError(f"workload {kind!r} / dtype {dtype!r} cannot be analysed; valid: "
                            f"{', '.join(PROFILE_KINDS)} / {', '.join(DTYPES)}")
        seq = seq if seq is not None else min(config.block_size, DEFAULT_SEQ)
        config.check_sequence(seq)
        return TraceWorkload(
            config, kind, batch if batch is not None else DEFAULT_BATCH, seq, dtype,
            None, None, f"{device_type}: {device_name or 'device of the trace'}", device_type,
            device_name, SOURCE_FLAGS)

    rec, where = recorded.workload, recorded.where
    recorded_config = recorded.config

    def refuse(flag: str, given: Any, what: str, value: Any) -> UserError:
        return UserError(f"{flag} {given!r} does not match {where}: it was recorded with {what} "
                         f"{value!r}; leave {flag} out to use the recorded value")

    for name, given in (("kind", kind), ("batch", batch), ("seq", seq), ("dtype", dtype)):
        if given is not None and given != rec[name]:
            raise refuse(_flag(name), given, "workload" if name == "kind" else name, rec[name])
    if given_type is not None and given_type != recorded.device_type:
        raise UserError(f"--device {device!r} does not match {where}: it was recorded on "
                        f"{recorded.device}; leave --device out")
    for name, given in model.items():
        if name != "preset" and given != getattr(recorded_config, name):
            raise refuse(_flag(name), given, name, getattr(recorded_config, name))
    if config is None and "preset" in model:
        config = preset(model["preset"], **{k: v for k, v in model.items() if k != "preset"})
    if config is not None and config != recorded_config:  # GPTConfig equality skips the name
        differ = ", ".join(f"{f} {getattr(recorded_config, f)} (not {getattr(config, f)})"
                           for f in recorded_config.to_dict()
                           if f != "name" and getattr(config, f) != getattr(recorded_config, f))
        flag = f"--preset {model['preset']!r}" if "preset" in model else "config"
        raise UserError(f"{flag} does not match {where}: it was recorded with model "
                        f"{recorded_config.name!r}: {differ}; leave it out to use the recorded model")
    return TraceWorkload(
        recorded_config, rec["kind"], rec["batch"], rec["seq"], rec["dtype"], rec.get("compile"),
        rec.get("plan"), recorded.device, recorded.device_type,
        device_name or recorded.device_name, SOURCE_RECORD)


def workload_doc(config: GPTConfig, kind: str, batch: int, seq: int, dtype: str,
                 compiled: bool | None, source: str) -> dict[str, Any]:
    """The `workload` of a profile document: what ran (or was analysed) and how it was found."""
    return {"kind": kind, "batch": batch, "seq": seq, "dtype": dtype, "compile": compiled,
            "config": config.to_dict(), "source": source}
