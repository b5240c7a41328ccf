-- Sample data for the Gatehouse demo: a tiny payments database with test card numbers
-- (Luhn-valid numbers from the card brands' published test ranges; no real card data).
-- Loaded by demo/run.sh as the service role gatehouse_svc into the database "payments".

CREATE TABLE customers (
    id    serial PRIMARY KEY,
    name  text NOT NULL,
    email text
);

CREATE TABLE payments (
    id          serial PRIMARY KEY,
    customer_id int REFERENCES customers,
    card_number text NOT NULL,
    cvv         text,
    amount      numeric(12,2),
    created_at  timestamptz DEFAULT now()
);

INSERT INTO customers (name, email) VALUES
    ('Ada',   'ada@example.com'),
    ('Grace', 'grace@example.com');

INSERT INTO payments (customer_id, card_number, cvv, amount) VALUES
    (1, '4111111111111111', '123', 10.50),   -- Visa test PAN
    (2, '5555555555554444', '456', 99.99),   -- Mastercard test PAN
    (1, '378282246310005',  '789',  5.00);   -- American Express test PAN
