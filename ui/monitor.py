"""Live training progress on a page: a progress bar, the latest figures and loss / accuracy curves."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from .text import MODALITY_NAMES, esc


class TrainMonitor:
    """Renders training events (training.train callback dicts) as a progress bar, metrics and live loss curves."""

    def __init__(self, where=None, overall: bool = False):
        where = where or st
        self.overall = overall
        self.bar = where.progress(0.0, text="Starting…")
        self.stats = where.empty()
        c1, c2 = where.columns(2)
        c1.caption("Training loss (per step)")
        self.loss_chart = c1.empty()
        c2.caption("Validation accuracy (per epoch)")
        self.acc_chart = c2.empty()
        self.losses: list[dict] = []
        self.accs: list[dict] = []
        self._last = 0.0

    def __call__(self, event: dict) -> None:
        stage = event.get("stage")
        if stage == "train" and "step" in event:
            frac = (event["epoch"] - 1 + event["step"] / event["steps"]) / event["epochs"]
            self.losses.append({"epoch": round(event["epoch"] - 1 + event["step"] / event["steps"], 3),
                                **{k: float(v) for k, v in event["loss"].items()}})
            now = time.time()
            if now - self._last < 0.25 and event["step"] != event["steps"]:
                return  # enough redraws to look live, few enough to keep training fast
            self._last = now
            self.stats.caption(f"epoch {event['epoch']}/{event['epochs']} · step {event['step']}/{event['steps']} · "
                               f"loss {event['loss']['total']:.3f}")
            self.loss_chart.line_chart(pd.DataFrame(self.losses).set_index("epoch"), height=220, x_label="epoch")
            value = event.get("overall", frac) if self.overall else frac
            self.bar.progress(min(1.0, float(value)), text=esc(event.get("message") or
                              f"Training: epoch {event['epoch']} of {event['epochs']}"))
        elif stage == "epoch":
            self.accs.append({"epoch": event["epoch"], **{MODALITY_NAMES.get(k, k): v
                                                          for k, v in event["val_accuracy"].items()}})
            if len(self.accs) < 2:  # one point draws no line
                self.acc_chart.caption(f"after epoch {event['epoch']}: " + " · ".join(
                    f"{k} {v:.1%}" for k, v in self.accs[-1].items() if k != "epoch"))
            else:
                self.acc_chart.line_chart(pd.DataFrame(self.accs).set_index("epoch"), height=220, x_label="epoch")
        elif "overall" in event or "message" in event:
            value = event.get("overall", 0.0) if self.overall else (1.0 if stage == "done" else 0.0)
            self.bar.progress(min(1.0, float(value)), text=esc(event.get("message", stage)))
