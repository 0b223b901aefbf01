"""The configuration's parts, behind :mod:`architect_cleanup.config` (import from there).

- :mod:`.problems`: a problem as a ``(key, message)`` value, and ConfigError holding them all.
- :mod:`.units`: durations, sizes and free-space floors, and the bounds they are checked against.
- :mod:`.readers`: the value kinds: each reads one TOML value or says what is wrong with it.
- :mod:`.tables`: how a key declares itself (reader, default, help), and the one generic
  reader of a TOML table against a section's declared keys.
- :mod:`.backups`, :mod:`.sections`, :mod:`.rules`, :mod:`.notify`: the sections, each key
  declared once.
- :mod:`.consistency`: what one section says that another contradicts.
- :mod:`.files`: the files read (main file, drop-ins), their trust checks and their layers.
"""
