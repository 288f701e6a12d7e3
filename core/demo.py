"""The bundled sample studies a demo session runs on (real files from pydicom-data)."""

from __future__ import annotations

from .ingest import IngestResult, ingest
from .samples import sample
from .store import Store

__all__ = ["DEMO_SAMPLES", "load_demo"]

# CT (signed), MR, CR radiograph (MONOCHROME1), ultrasound RGB, multi-frame MR.
DEMO_SAMPLES = ("693_UNCR", "MR2_UNCR", "RG1_UNCR", "US1_UNCR", "emri_small")


def load_demo(store: Store) -> list[IngestResult]:
    """Ingest the samples once: an archive that already has studies is left alone."""
    if store.studies():
        return []
    results = list(ingest(store, [sample(name) for name in DEMO_SAMPLES]))
    with store.connect() as db:
        for uid in {r.study_uid for r in results if r.study_uid}:
            db.execute("UPDATE studies SET demo=1 WHERE study_uid=?", (uid,))
    return results
