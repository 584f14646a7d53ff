// The type every dashboard JSON file must satisfy.
//
// `Dashboard` is @grafana/schema's veneer type (the one Grafana's own frontend uses). Two
// adjustments, both needed because the dashboards are JSON files rather than TypeScript:
//
// * `JsonOf` turns every string enum (e.g. `ThresholdsMode`, `MappingType`) into the union of its
//   literal values: JSON can only hold `"absolute"`, never `ThresholdsMode.Absolute`. Numeric enums
//   and everything else are kept as they are, so a wrong field type still fails.
// * `__inputs`, `__requires` and `__elements` are the import-time envelope Grafana's "Export for
//   sharing externally" writes and its import UI reads; the schema does not describe them, so they
//   are typed here from Grafana's import behaviour.
import type { Dashboard } from '@grafana/schema';

export type JsonOf<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends Array<infer U>
      ? Array<JsonOf<U>>
      : T extends object
        ? { [K in keyof T]: JsonOf<T[K]> }
        : T;

export interface DashboardInput {
  name: string;
  label: string;
  description?: string;
  type: 'datasource' | 'constant';
  pluginId?: string;
  pluginName?: string;
  value?: string;
}

export interface DashboardRequirement {
  type: 'grafana' | 'datasource' | 'panel';
  id: string;
  name: string;
  version: string;
}

export type ImportableDashboard = JsonOf<Dashboard> & {
  __inputs: DashboardInput[];
  __requires: DashboardRequirement[];
  __elements?: Record<string, unknown>;
};
