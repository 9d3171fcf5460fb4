"""Offline tools beside the services: calibration, training, measurements. Not imported by any service."""
