-- A call's state is only ever read whole, by the service, which parses it
-- itself; no statement looks inside it. As jsonb, every read had PostgreSQL
-- turn the binary form back into text (jsonb_send: a seventh of the
-- database's work on a page of ListCalls) and every write parse the text
-- into it. As json, the text the service wrote is kept and sent back as is.
ALTER TABLE calls ALTER COLUMN state TYPE json USING state::json;
