DROP TABLE projection_meta;
DROP TABLE dead_letter;
DROP TABLE consumer_position;
DROP TABLE pending_event;
DROP TABLE order_history;
DROP TABLE order_view_line;
DROP TABLE order_view;
