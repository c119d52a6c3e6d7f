"""Websocket transport: bytes <-> protocol <-> hub. No rules live here."""
