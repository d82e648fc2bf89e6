-- A count of the changes to display names, so that the scheduling service can
-- keep names in memory for call cards and still never show an outdated one:
-- a statement that reads a page of calls reads the count in the same
-- snapshot, and the names the service holds are used only when they were
-- read at that same count. Looked up per page, the names were half of the
-- database's work for ListCalls.
--
-- Only a change of a name, a removal and TRUNCATE count. A new participant
-- does not: the service never keeps "no such participant". Every change
-- updates this one row, so changes of names wait for each other's commit;
-- they come one fact at a time from the platform and are rare.
CREATE TABLE directory_epoch (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch     bigint NOT NULL
);
INSERT INTO directory_epoch (singleton, epoch) VALUES (true, 0);

CREATE FUNCTION directory_epoch_bump() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE directory_epoch SET epoch = epoch + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER participants_renamed
    AFTER UPDATE OF display_name ON participants
    FOR EACH ROW WHEN (OLD.display_name IS DISTINCT FROM NEW.display_name)
    EXECUTE FUNCTION directory_epoch_bump();

CREATE TRIGGER participants_removed
    AFTER DELETE ON participants
    FOR EACH ROW EXECUTE FUNCTION directory_epoch_bump();

CREATE TRIGGER participants_truncated
    AFTER TRUNCATE ON participants
    FOR EACH STATEMENT EXECUTE FUNCTION directory_epoch_bump();
