"""The daemon (``btrsendd run``), in three parts besides its schedule (``btrsendd/cron.py``):

- ``state.py``: ``<state_dir>/daemon.json``, the state it publishes, as typed records that
  ``status`` and ``trigger`` read back (light: no APScheduler, no engine);
- ``loop.py``: the main loop (signals, scheduler, catch-up, reload, watchdog, stopping), with
  ``worker.py``, the thread that runs the backup cycles, and ``publisher.py``, the state its
  threads share and how it is written out.

Nothing is imported here, so reading the state costs only ``state.py``.
"""
