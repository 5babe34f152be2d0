"""The web dashboard, `kiri serve`: standard library only, server-rendered HTML with inline
SVG charts, no script, nothing fetched from elsewhere (it works offline).

    server.py   HTTP: who may come in (token, CSRF, Host), the routes, errors as one log line
    views.py    what each page shows, read from the store in bounded, time-windowed queries
    pages.py    the HTML
    charts.py   the SVG charts
    browser.py  headless Chromium over the DevTools protocol: `kiri serve --screenshot`
"""

from .server import bind_address, make_server, serve, serve_in_thread
