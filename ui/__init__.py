"""The Streamlit app's shared pieces, one module per concern; pages use them as `ui.<name>`.

  ui.runs     where runs live, this session's run, the model / run.json / search index loaded once per process
  ui.text     safe text: Markdown-escaped titles, code spans, errors as one-line messages
  ui.widgets  photos and photo grids, hit tables, label bars, the model card, upload folders
  ui.monitor  live training progress (TrainMonitor), background trainings in the sidebar (jobs_sidebar)
  ui.evaluation  the Evaluation tab: test figures, retrieval tables, history, confusion matrix

Environment variables (all optional):
  HUSE_RUNS_DIR   folder holding the runs (default: runs/ beside app.py); the demo builds into <it>/demo
  HUSE_DATA_DIR   folder for catalogues (default: data/ beside app.py); the demo catalogue goes to <it>/demo
  HUSE_RUN        the run selected when a session starts (a path); with it set nothing is built at start
  HUSE_AUTOBUILD  "0" = on first start, ask before building the demo instead of building it straight away
  HUSE_DEMO_SIZE  "tiny" = the first start builds a 240-product toy demo in seconds (tests, smoke checks)
"""

from .evaluation import evaluation
from .monitor import TrainMonitor, jobs_section, jobs_sidebar, launch
from .runs import (APP_DIR, build_index_with_progress, cached_run, current_run, data_root, demo_dirs, demo_spec,
                   list_runs, meta_of, model_and_searcher_or_stop, mtime, offer_index_build, open_searcher, page_setup,
                   run_or_stop, run_status, runs_root, searcher_or_stop, select_run, summary_of, unfinished_runs,
                   usable)
from .text import DIRECTIONS, MODALITY_NAMES, code, describe, esc, sentence, short
from .widgets import (IMAGE_TYPES, PREVIEW_PX, HitLike, hit_grid, hits_table, label_columns, model_card, photo, preview,
                      prob_bars, thumb_uri, unknown_words, upload_folder)

__all__ = ["APP_DIR", "DIRECTIONS", "HitLike", "IMAGE_TYPES", "MODALITY_NAMES", "PREVIEW_PX", "TrainMonitor",
           "build_index_with_progress", "cached_run", "code", "current_run", "data_root", "demo_dirs", "demo_spec",
           "describe", "esc", "evaluation", "hit_grid", "hits_table", "jobs_section", "jobs_sidebar", "launch",
           "label_columns", "list_runs", "meta_of", "model_and_searcher_or_stop", "model_card", "mtime",
           "offer_index_build", "open_searcher", "page_setup", "photo", "preview", "prob_bars", "run_or_stop",
           "run_status", "runs_root", "searcher_or_stop", "select_run", "sentence", "short", "summary_of",
           "thumb_uri", "unfinished_runs", "unknown_words", "upload_folder", "usable"]
