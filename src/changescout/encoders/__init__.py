"""Pluggable encoders: one registry (built-ins + the ``changescout.encoders`` entry points)."""

from .base import Encoder, EncoderSpec, available_encoders, encoder_class, get_encoder, select_bands

__all__ = ["Encoder", "EncoderSpec", "available_encoders", "encoder_class", "get_encoder", "select_bands"]
