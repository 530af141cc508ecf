"""The web dashboard (``archiver serve``, or the daemon with ``web.with_daemon``).

request -> ``app`` (routes, token and CSRF checks, security headers) -> ``views`` (what each
page shows, as data; the SQL is in ``archiver.catalog.queries``) -> a Jinja template or JSON.
``images`` finds the two pictures of a file page through its catalog row; ``plot`` draws the
overview's bytes-over-time SVG; ``server`` runs it all on waitress; ``settings`` checks the
``web:`` config. Templates and static files ship inside the package: nothing comes from a CDN.
"""
