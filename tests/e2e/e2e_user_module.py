"""Stands for a user's own verl extension module (listed in ``VERL_USE_EXTERNAL_MODULES``); it does nothing.

registration_probe.py checks whether a Ray worker's ``import verl`` imported it.
"""
