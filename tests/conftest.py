"""The one place shared fixtures are registered, for every test folder.

* ``fixtures_mqtt``: a throwaway CA (``test_ca``) and a real Mosquitto on loopback (``mosquitto``);
* ``fixtures_postgres``: a private PostgreSQL (``postgres_server``, ``postgres``) and
  ``store_backend``, which runs a test once on SQLite and once on PostgreSQL;
* ``fixtures_tpm``: a real swtpm (``swtpm``);
* ``fixtures_attestation``: a complete attestation world (``world``, ``world_factory``, ...).

Helper modules are imported by name (``from agent_helpers import ...``): pyproject.toml's
``pythonpath`` lists the folders that hold them, so no test file edits ``sys.path``.
"""

pytest_plugins = ["fixtures_mqtt", "fixtures_postgres", "fixtures_tpm", "fixtures_attestation"]
