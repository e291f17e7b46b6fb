-- Run once by the postgres image, when its data volume is empty (docker/docker-compose.yml).
-- Creates the login that Dagster and st_pipeline share (DAGSTER_PG_USER / DAGSTER_PG_PASSWORD,
-- no superuser) and the three databases it owns: Dagster's runs and events, the warehouse, and the
-- tenant registry. Other logins (the BI roles of `st-pipeline access grant`) may connect to the
-- warehouse only.
\getenv app_user DAGSTER_PG_USER
\getenv app_password DAGSTER_PG_PASSWORD

CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password';
CREATE DATABASE dagster OWNER :"app_user";
CREATE DATABASE warehouse OWNER :"app_user";
CREATE DATABASE registry OWNER :"app_user";
REVOKE ALL ON DATABASE dagster FROM PUBLIC;
REVOKE ALL ON DATABASE registry FROM PUBLIC;
