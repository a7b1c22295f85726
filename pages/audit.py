"""Audit: catalogue errors the model finds (wrong labels, photos that don't match titles, duplicates), reviewed
row by row or in bulk, and the corrected catalogue exported for the next training."""

from __future__ import annotations

import streamlit as st

import ui
from huse_core.audit import (AuditError, audit, export_corrected, load_findings, read_decisions, record,
                             save_findings)

ui.page_setup("pages/audit.py")

TABS = {"labels": "Wrong labels", "mismatch": "Photo ↔ title", "duplicates": "Duplicates"}
PER_PAGE = 20  # findings shown at once in a tab

st.title("Catalogue audit")
st.caption("What the model doubts in your own catalogue: labels the rest of the catalogue contradicts (scored out of "
           "sample, so a label the model memorised is still caught), photos that show something else than their "
           "title, and the same item listed twice. Accept a suggestion, keep the catalogue as it is, or skip; "
           "decisions are saved with the run. Then export a corrected copy of the catalogue and train on it.")
run_dir = ui.run_or_stop()

rows = load_findings(run_dir)
c1, c2 = st.columns([1, 3])
if c1.button("Run the audit" if rows is None else "Audit again", key="audit_run", type="primary" if rows is None
             else "secondary"):
    bar = st.progress(0.0, text="Auditing the catalogue…")
    try:
        rows = audit(run_dir, callback=lambda e: bar.progress(min(1.0, e["fraction"]), text=e["message"]))
    except (AuditError, ValueError, RuntimeError) as err:
        st.error(ui.describe(err))
        st.stop()
    finally:
        bar.empty()
    save_findings(run_dir, rows)
if rows is None:
    c2.info("No audit of this model yet: run it (about as long as an evaluation).")
    st.stop()

decided = read_decisions(run_dir)
status = {(d.kind, d.id, d.head): d.decision for d in decided.itertuples()}
show = c2.segmented_control("Show", ["undecided", "accepted", "kept", "skipped", "all"], default="undecided",
                            key="audit_show", required=True)
WANT = {"accepted": "accept", "kept": "keep", "skipped": "skip"}


def visible(kind: str) -> list[dict]:
    found = [r for r in rows if r["kind"] == kind]
    if show == "all":
        return found
    return [r for r in found if status.get((r["kind"], r["id"], r["head"])) == WANT.get(show)]


def decide(found: list[dict], decision: str) -> None:
    record(run_dir, found, decision)
    st.rerun()


tabs = st.tabs([f"{name} ({sum(r['kind'] == kind for r in rows):,})" for kind, name in TABS.items()])
for tab, kind in zip(tabs, TABS):
    with tab:
        found = visible(kind)
        if not found:
            st.caption("Nothing here.")
            continue
        shown = found[:PER_PAGE]
        b1, b2, b3, info = st.columns([1, 1, 1, 3])
        for col, (label, decision) in zip((b1, b2, b3), (("Accept all shown", "accept"), ("Keep all shown", "keep"),
                                                          ("Skip all shown", "skip"))):
            if col.button(label, key=f"audit_bulk_{kind}_{decision}"):
                decide(shown, decision)
        info.caption(f"{len(shown)} of {len(found):,} shown, highest score first.")
        for n, r in enumerate(shown):
            with st.container(border=True):
                left, mid, right = st.columns([1, 4, 2])
                with left:
                    ui.photo(r["image"], width=90)
                with mid:
                    st.markdown(f"**{ui.esc(ui.short(r['title'], 90))}** · id `{r['id']}`")
                    st.markdown(f"{ui.esc(r['head'])}: **{ui.esc(r['current'])}** → "
                                f"**{ui.esc(r['suggested'])}**")
                    st.caption(f"{r['reason']} · score {r['score']:.2f}"
                               + (f" · with {r['others']}" if r.get("others") else ""))
                with right:
                    now = status.get((r["kind"], r["id"], r["head"]))
                    if now:
                        st.caption(f"decided: {now}")
                    for label, decision in (("Accept", "accept"), ("Keep", "keep"), ("Skip", "skip")):
                        if st.button(label, key=f"audit_{kind}_{n}_{decision}", use_container_width=True):
                            decide([r], decision)

st.divider()
n_accepted = int((decided["decision"] == "accept").sum()) if len(decided) else 0
st.subheader("Corrected catalogue")
st.caption(f"{n_accepted:,} accepted suggestions. Exporting writes a new CSV beside your catalogue with accepted "
           "labels changed and accepted duplicates and mismatched listings left out; your file is never changed.")
if st.button("Export corrected catalogue", key="audit_export", disabled=not n_accepted):
    result = export_corrected(run_dir)
    st.session_state["audit_exported"] = result
done = st.session_state.get("audit_exported")
if done:
    st.success(f"Wrote {done['rows']:,} products to {done['path']} ({done['changed']:,} labels corrected, "
               f"{done['removed']:,} listings left out).")
    st.code(f"python -m huse_core train --catalog {done['path']} --out runs/corrected", language="bash")
    st.page_link("pages/train.py", label="Train again on the corrected catalogue", icon=":material/model_training:")
