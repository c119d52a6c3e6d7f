"""The Python device agent: enrol, connect, report inventory, obey commands.

Not written yet. The wire messages it will speak (``INVENTORY``,
``CMD_REBOOT``, ``CMD_WAKE``, ``CMD_LOGOUT``, ``CMD_RESULT``,
``DEVICE_STATUS``) are defined in :mod:`protocol`; the relay answers the
device endpoint with 4511 until devices can enrol.
"""
