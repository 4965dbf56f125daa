"""``overnight ui``: a web page over the queue, server-rendered (Starlette, Jinja2) with htmx and
uPlot vendored under ``static/``; nothing is fetched from the internet at run time.

Modules: ``app`` (the routes), ``security`` (who may connect: hosts, token, CSRF), ``ansi`` (a
log line's colours as HTML, every other control sequence shown, never obeyed), ``runs`` (the runs
list: filters, columns, sorting, paging), ``runview`` (one run's page), ``pages`` (compare,
sweep, agents and queues), ``actions`` (cancel, retry, clone). Its dependencies are the ``ui``
extra, imported only by ``overnight ui``.
"""
