"""Readers for published dataset layouts."""

from .layouts import Case, chaos_cases, list_cases, nnunet_cases

__all__ = ["Case", "chaos_cases", "list_cases", "nnunet_cases"]
