-- The trace of the call event that caused a delivery (W3C traceparent and
-- tracestate), so that the e-mail's SMTP hand-off, which runs later in the
-- delivery worker, shows up in the booking's trace.
ALTER TABLE notification_deliveries
    ADD COLUMN traceparent text,
    ADD COLUMN tracestate text;
