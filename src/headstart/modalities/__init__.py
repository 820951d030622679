"""Modality plug-ins (text, image, event sequences): the data side of a run behind one protocol."""

from headstart.modalities.base import Inputs, Modality, get_modality, modality_names, register_modality

__all__ = ["Inputs", "Modality", "get_modality", "modality_names", "register_modality"]
