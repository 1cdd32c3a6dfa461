import "./provided.js";

export {
  type BackendSpec,
  type ChildAcquireOptions,
  type ChildContext,
  type ChildEvent,
  type ChildExtension,
  type ChildHoldRecord,
  type ChildLease,
  type ChildSetup,
  type ContendOptions,
  faketime,
  LockChild,
  type LockChildOptions,
  type LostEvent,
} from "./child.js";
export {
  type CountedServer,
  countRequests,
  countRequestsByMethod,
  countStatements,
  monitorRedis,
  type RedisMonitor,
} from "./counting.js";
export {
  databaseUrlFromEnv,
  etcdEndpointsFromEnv,
  mysqlUrlFromEnv,
  redisUrlFromEnv,
} from "./env.js";
export {
  type EtcdClusterHandle,
  type EtcdClusterOptions,
  type EtcdOptions,
  type EtcdServer,
  startEtcd,
  startEtcdCluster,
} from "./etcd.js";
export { type MariadbOptions, type MariadbServer, startMariadb } from "./mariadb.js";
export { nodeChildArgs } from "./node.js";
export { type PostgresOptions, type PostgresServer, startPostgres } from "./postgres.js";
export {
  type HttpResponse,
  httpRequest,
  PgServerError,
  type PgTarget,
  pgQuery,
  RedisReplyError,
  type RespValue,
  redisCommand,
  type Target,
} from "./probe.js";
export { type ServerProcess, StartError } from "./process.js";
export { startProxy, type TcpProxy } from "./proxy.js";
export {
  type RedisClusterHandle,
  type RedisClusterOptions,
  type RedisOptions,
  type RedisServer,
  startRedis,
  startRedisCluster,
  startRedisGroup,
} from "./redis.js";
export { cleanupAllSync, trackedCounts } from "./registry.js";
export { countOver, untilSteady } from "./steady.js";
export { freePort, MissingBinaryError, type WaitForOptions, waitFor } from "./util.js";
