"""The model: backbones, towers and the HUSE model (photos and titles into one space); the optional MiniLM encoder."""

from .huse import (BACKBONES, SENTENCE_DIMS, TEXT_BACKBONES, WEIGHT_FILES, HuseModel, build_model, find_weights,
                   pretrained_backbone)

__all__ = ["BACKBONES", "SENTENCE_DIMS", "TEXT_BACKBONES", "WEIGHT_FILES", "HuseModel", "build_model", "find_weights",
           "pretrained_backbone"]
