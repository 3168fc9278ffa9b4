-- A pending trace's row is written three times: inserted with its blocks, updated when claimed
-- (and when more blocks arrive), and deleted when analysed. An update that finds room on the
-- row's own page changes no index (a HOT update: claim and claimed_until are not indexed); on
-- full pages each claim wrote a new entry in both indexes, 94% of the claims in a bench
-- (docs/scaling.md). Pages are filled to half at insert from now on, so the claim has room.
ALTER TABLE pending_traces SET (fillfactor = 50);
