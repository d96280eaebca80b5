"""What the controller and the workers both import: settings, message schema, zone crypto, broker."""

__version__ = "0.1.0"
