-- "Slowest requests" lists (the traces API, the endpoint page) read the top of a window ordered
-- by duration: without these, SQLite sorts every request of the window (seconds for a day).
CREATE INDEX requests_by_duration ON requests (duration_ns);
CREATE INDEX requests_by_endpoint_duration ON requests (endpoint_id, duration_ns);
