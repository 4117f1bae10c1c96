DROP TABLE saga_position;
DROP TABLE saga_event;
DROP TABLE saga_intent;
DROP TABLE saga;
