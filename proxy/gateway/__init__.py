"""The message path: sender sessions, the engine, the store and carrier links composed.

One component per job, composed by a thin shell:

* ``shell``: `Gateway`, which builds and wires the components, starts and stops them;
* ``context``: what the components share (settings, store, counters, tasks);
* ``path``: the life of a message top to bottom: event, engine, commit, actions;
* ``intake``: sender sessions: binds, submit/query/cancel/replace, suppression;
* ``dispatch``: the engine's actions on the carrier links (submit, cancel, query);
* ``receipts``: what carriers deliver: receipts matched to messages, MO, alerts;
* ``scheduler``: due retries, housekeeping, recovery, the shared store's notices;
* ``pump``: stored receipts to the senders' receivers;
* ``locks``: the per-message locks and bounded caches;
* ``metrics``: counts what passes; its registry and readiness are what ``/metrics``
  and ``/readyz`` of the HTTP listener (``bounceback.admin``) answer;
* ``control``: the admin API's questions and actions, answered from the components;
* ``overview``: the web console's live figures (rates, shares, carriers, health);
* ``learning``: the recovery estimates' counts, kept in memory and in the store.
"""
