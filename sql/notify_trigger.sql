-- Wakes bugzfeed-shim on every change; the table stays the truth.
CREATE OR REPLACE FUNCTION "bugzfeed_notify_push_notify"() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('push_notify', NEW.id::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE OR REPLACE TRIGGER "bugzfeed_notify"
    AFTER INSERT OR UPDATE ON "push_notify"
    FOR EACH ROW EXECUTE FUNCTION "bugzfeed_notify_push_notify"();
