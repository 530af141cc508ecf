"""The commands ring: every ``archiver`` command, the human and JSON rendering, the dashboard and
``doctor``. The only part of archiver that imports click, flask or tqdm."""
