DROP TABLE reservation_line;
DROP TABLE reservation;
DROP TABLE stock_item;
