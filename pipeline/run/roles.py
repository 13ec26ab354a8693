"""Which store fills each of a head's roles.

A role takes feature kinds (grid, vector, tokens, pixels) and, where it says, one modality
(image or text): a store's modality is its extractor's (`Extractor.modality`, named by the
store's manifest), so a CLIP *image* vector never fills a text role however well its shape fits.
A store of an extractor not registered here (an older or custom one) has no known modality
and is judged on its kind alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import extractors
from pipeline.core import paths
from pipeline.core.errors import PipeError
from pipeline.store import FeatureStore, Manifest, list_stores, resolve_store
from pipeline.train.data import Role


def store_modality(manifest: Manifest) -> str | None:
    """image | text: the modality of the extractor that wrote the store; None when not registered."""
    return extractors.get(manifest.extractor).modality if manifest.extractor in extractors.names() else None


def _needs(spec: Role) -> str:
    """What a role takes, for messages: `grid or vector image`."""
    return " or ".join(spec.kinds) + (f" {spec.modality}" if spec.modality else "")


def resolve_roles(
    roles: dict[str, Role],
    dataset: str,
    cache: str | Path | None = None,
    choices: dict[str, str] | None = None,
) -> tuple[dict[str, FeatureStore], list[str]]:
    """Which store fills each role, and notes for the user.

    A role gets the store the user named (id or unique prefix), else the store whose id
    starts with the role's paper default, else the only store of a compatible kind not
    already taken by another role; ambiguity or a missing required store is an error
    listing the candidates. Optional roles without a store are left out.
    """
    choices = dict(choices or {})
    notes = [f"--{r} {ref} ignored: this head configuration reads no {r!r} role" for r, ref in choices.items()
             if r not in roles]
    manifests = {eid: Manifest.load(paths.store_dir(dataset, eid, cache)) for eid in list_stores(dataset, cache)}
    all_specs = {eid: m.spec for eid, m in manifests.items()}
    modality = {eid: store_modality(m) for eid, m in manifests.items()}

    def fits(eid: str, spec: Role) -> bool:
        mod = modality[eid]
        return all_specs[eid].kind in spec.kinds and (spec.modality is None or mod is None or mod == spec.modality)

    # A store with no rows (an extraction that never finished a shard) is never picked by default.
    specs = {e: m.spec for e, m in manifests.items() if m.rows > 0}
    notes += [f"store {e} has no rows yet: not considered" for e in sorted(set(all_specs) - set(specs))]
    chosen: dict[str, str] = {}
    for role, spec in roles.items():
        if role in choices:
            eid = resolve_store(dataset, choices[role], cache).name
            if not fits(eid, spec):
                held = f"{modality[eid]} " if modality[eid] and spec.modality else ""
                raise PipeError(f"--{role} {choices[role]}: store {eid} holds {held}{all_specs[eid].kind} rows; "
                                f"role {role!r} needs {_needs(spec)} features")
            chosen[role] = eid
    order = [r for r in roles if roles[r].required] + [r for r in roles if not roles[r].required]
    for role in order:  # paper defaults next
        spec = roles[role]
        if role in chosen or not spec.default:
            continue
        hits = [e for e in specs if e.startswith(spec.default) and fits(e, spec)]
        if len(hits) > 1:
            raise PipeError(f"several {spec.default} stores could fill role {role!r} in {dataset!r}: {hits}; "
                            f"choose one with --{role}")
        if hits:
            chosen[role] = hits[0]
    for role in order:  # then the only compatible store left
        spec = roles[role]
        if role in chosen:
            continue
        cands = [e for e in specs if fits(e, spec) and e not in chosen.values()]
        if len(cands) == 1:
            chosen[role] = cands[0]
        elif len(cands) > 1:
            raise PipeError(f"role {role!r} ({_needs(spec)}) could be filled by several stores of "
                            f"{dataset!r}: {cands}; choose one with --{role}")
        elif spec.required:
            raise PipeError(f"role {role!r} needs a {_needs(spec)} store in {dataset!r} and there is none "
                            f"(stores: {sorted(specs) or 'none'}); run `pipe extract --dataset {dataset} ...` first")
        else:
            notes.append(f"optional role {role!r} left out: no {_needs(spec)} store in {dataset!r}")
    stores = {role: FeatureStore(paths.store_dir(dataset, eid, cache)) for role, eid in chosen.items()}
    return stores, notes


def describe_stores(stores: dict[str, FeatureStore]) -> dict[str, dict[str, Any]]:
    return {role: {"extractor_id": s.extractor_id, "extractor": s.manifest.extractor, "spec": s.spec.to_json(),
                   "posts": len(s), "manifest_sha256": s.manifest.digest} for role, s in stores.items()}
