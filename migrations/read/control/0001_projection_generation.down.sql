DROP TABLE projection_generation;
