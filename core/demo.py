"""The bundled sample studies a demo session runs on (real files from pydicom-data)."""

from __future__ import annotations

from .ingest import IngestResult, ingest
from .samples import sample
from .store import Store
from .users import mark_demo

__all__ = ["DEMO_SAMPLES", "load_demo"]

# CT (signed), MR, CR radiograph (MONOCHROME1), ultrasound RGB, multi-frame MR.
DEMO_SAMPLES = ("693_UNCR", "MR2_UNCR", "RG1_UNCR", "US1_UNCR", "emri_small")


def load_demo(store: Store) -> list[IngestResult]:
    """Ingest the samples once: an archive that already has studies is left alone.

    The sample instances are marked one by one: a demo login sees those only,
    never a clinic upload that happens to share a sample's Study UID.
    """
    if store.studies():
        if not store.query("SELECT 1 FROM demo_instances LIMIT 1"):  # an archive from before per-instance marking
            mark_demo(store, [r["sop_uid"] for s in store.studies() if s["demo"] for r in store.instances(s["study_uid"])])
        return []
    results = list(ingest(store, [sample(name) for name in DEMO_SAMPLES]))
    mark_demo(store, [r.sop_uid for r in results if r.status == "stored"])
    with store.connect() as db:
        for uid in {r.study_uid for r in results if r.study_uid}:
            db.execute("UPDATE studies SET demo=1 WHERE study_uid=?", (uid,))
    return results
