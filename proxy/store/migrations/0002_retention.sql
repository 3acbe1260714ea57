-- Retention removes a finished message's carrier ids with it: find them by message.
CREATE INDEX carrier_ids_message ON carrier_ids (message_id);
