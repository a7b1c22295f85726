"""The model: backbones, towers and the HUSE model (photos and titles into one space); the optional MiniLM encoder."""

from .backbones import (BACKBONES, PRETRAINED_IMAGE_SIZE, SENTENCE_DIMS, TEXT_BACKBONES, WEIGHT_FILES, backbone_choices,
                        default_image_size, find_weights, pretrained_backbone)
from .huse import HuseModel, build_model

__all__ = ["BACKBONES", "PRETRAINED_IMAGE_SIZE", "SENTENCE_DIMS", "TEXT_BACKBONES", "WEIGHT_FILES", "HuseModel",
           "backbone_choices", "build_model", "default_image_size", "find_weights", "pretrained_backbone"]
