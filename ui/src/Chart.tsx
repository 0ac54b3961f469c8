// A bar chart on ECharts (only the parts used), loaded with the usage page.
import { useEffect, useRef } from 'react';
import * as echarts from 'echarts/core';
import { BarChart } from 'echarts/charts';
import { GridComponent, LegendComponent, TooltipComponent } from 'echarts/components';
import { CanvasRenderer } from 'echarts/renderers';

echarts.use([BarChart, GridComponent, TooltipComponent, LegendComponent, CanvasRenderer]);

export interface Series {
  name: string;
  values: number[];
}

export default function Chart({ categories, series, label }: { categories: string[]; series: Series[]; label: string }) {
  const el = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const chart = echarts.init(el.current!);
    chart.setOption({
      tooltip: { trigger: 'axis' },
      legend: {},
      grid: { left: 60, right: 16, top: 36, bottom: 40 },
      xAxis: { type: 'category', data: categories, axisLabel: { interval: 0, hideOverlap: true } },
      yAxis: { type: 'value' },
      series: series.map((s) => ({ name: s.name, type: 'bar', stack: 'total', data: s.values })),
    });
    const resize = () => chart.resize();
    window.addEventListener('resize', resize);
    return () => {
      window.removeEventListener('resize', resize);
      chart.dispose();
    };
  }, [categories, series]);
  return <div ref={el} style={{ width: '100%', height: 300 }} role="img" aria-label={label} />;
}
