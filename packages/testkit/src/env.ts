function nonEmpty(value: string | undefined): string | undefined {
  const trimmed = value?.trim();
  return trimmed ? trimmed : undefined;
}

/** `REDIS_URL` when set and not empty. */
export function redisUrlFromEnv(): string | undefined {
  return nonEmpty(process.env.REDIS_URL);
}

/** `ETCD_ENDPOINTS` (comma-separated) as a list, when set and not empty. */
export function etcdEndpointsFromEnv(): string[] | undefined {
  const value = nonEmpty(process.env.ETCD_ENDPOINTS);
  if (!value) return undefined;
  const endpoints = value
    .split(",")
    .map((e) => e.trim())
    .filter(Boolean);
  return endpoints.length ? endpoints : undefined;
}

/** `DATABASE_URL` when set and not empty. */
export function databaseUrlFromEnv(): string | undefined {
  return nonEmpty(process.env.DATABASE_URL);
}

/** `MYSQL_URL` when set and not empty. */
export function mysqlUrlFromEnv(): string | undefined {
  return nonEmpty(process.env.MYSQL_URL);
}
