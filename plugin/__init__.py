"""Clinical content of lupus-cds: advice cards for people with systemic lupus erythematosus (SLE) who
report muscle twitching (fasciculations).

The plugin reaches the protocol layer only through :mod:`plugin.hooks` (pluggy hook implementations).
Inside it: :mod:`plugin.settings` (thresholds and switches), :mod:`plugin.facts` (one immutable snapshot
of the patient data the rules read), :mod:`plugin.rules` (one small pure function per rule),
:mod:`plugin.rulebook` (the rule book a clinician reviews) and :mod:`plugin.cards` (every word a
clinician sees on a card).
"""
