import type {} from "vitest";

/**
 * What the global setups (`@locks/testkit/setup/*`) provide to tests:
 * `inject("redisUrl")`, `inject("etcdEndpoints")`, `inject("databaseUrl")`, `inject("mysqlUrl")`.
 */
declare module "vitest" {
  export interface ProvidedContext {
    /** From `@locks/testkit/setup/redis`: `REDIS_URL` or a server started for the run. */
    redisUrl: string;
    /** From `@locks/testkit/setup/etcd`: `ETCD_ENDPOINTS` or a server started for the run. */
    etcdEndpoints: string[];
    /** From `@locks/testkit/setup/postgres`: `DATABASE_URL` or a server started for the run. */
    databaseUrl: string;
    /** From `@locks/testkit/setup/mariadb`: `MYSQL_URL` or a MariaDB started for the run. */
    mysqlUrl: string;
  }
}
