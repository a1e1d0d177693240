"""Talking to image registries: authentication, Docker's credential store, pull and push."""
