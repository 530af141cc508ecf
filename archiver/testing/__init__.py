"""Fixtures for the tests and benches: small catalogs, codecs and collections built in memory or
under a temporary directory. Never imported by the runtime rings."""
