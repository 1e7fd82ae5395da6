-- Every change to a ticket row (an update or a delete, cascades included, by any process: an instance,
-- `satchel admin`) is announced on `satchel_tickets` with the ticket's id, delivered at commit. Each
-- instance forgets what it remembered of that ticket for its status polls (`satchel_domain::polls`).
-- Inserts need no announcement: nobody remembers a ticket before it exists.
CREATE FUNCTION satchel_ticket_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('satchel_tickets', OLD.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER tickets_changed AFTER UPDATE OR DELETE ON tickets
    FOR EACH ROW EXECUTE FUNCTION satchel_ticket_changed();
